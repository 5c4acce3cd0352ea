"""FastAPI and difo: enqueue with the async client, the dashboard mounted at /difo."""
