"""The chat engine: messages and media in, one text piece per generated token out."""
