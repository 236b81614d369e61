"""Ranking source models before fine-tuning them: transferability estimated from frozen features."""
