"""Reading a study back for people: the leaderboard, the plots, the parameter importances."""
