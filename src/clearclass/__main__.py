"""`python -m clearclass`: the same as the `clearclass` command."""

from clearclass.cli import main

main()
