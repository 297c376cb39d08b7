"""End-to-end tests: the installed ``corral`` command, the SDK and REST driven as a user drives them."""
