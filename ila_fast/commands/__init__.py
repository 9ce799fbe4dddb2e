"""Light command modules of ``ila-fast``: each declares one subcommand's arguments and runs it.

A command module imports only the standard library (and ``ila_fast.arguments`` /
``ila_fast.errors``) at its top, so building the parser never imports torch; ``run(args)``
imports the module that does the work. ``ila_fast/cli.py`` lists the commands.
"""
