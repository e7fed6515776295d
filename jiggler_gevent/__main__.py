"""`python -m jiggler_gevent` works like `gjiggler`."""

from jiggler_gevent.patch import main

if __name__ == "__main__":
    main()
