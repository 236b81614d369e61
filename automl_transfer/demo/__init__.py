"""The offline demo (``make demo``, ``automl-transfer demo``): a client of the search, never imported by it."""
