"""Example jobs shipped with the package; `gjiggler demo` runs them."""
