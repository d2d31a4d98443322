"""Browser tests; a package so their package-scoped browser and server end with them."""
