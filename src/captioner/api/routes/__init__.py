"""The app's routers, one module per group of routes."""
