"""A minimal Django project that enqueues difo units once its transactions commit."""
