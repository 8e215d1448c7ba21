"""`python -m clearclass`: the same as the `clearclass` command."""

from clearclass.cli import main

if __name__ == "__main__":  # importing the module (as the API tests do) runs nothing
    main()
