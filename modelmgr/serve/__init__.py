"""`modelmgr serve`: an OpenAI-compatible server over the cache and the backends, with a scheduler
that keeps models warm. settings.py and client.py are light (the client commands use them); the
rest imports the server stack and is imported only by `serve`."""
