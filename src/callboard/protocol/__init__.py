"""Wire-level code only: ids, tokens, worker frames, Twirp errors. No server state lives here."""
