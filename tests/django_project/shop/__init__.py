"""The test project's app: customers, their orders, and notes kept outside the database set."""
