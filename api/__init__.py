"""FastAPI app: thin routers over billing_engine services."""
