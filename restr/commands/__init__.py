"""The command line's commands, one module each: its options and what it prints.

``python -m restr <command>`` (:mod:`restr.cli`) imports only the module of the command it
runs. Each module parses its arguments, calls the library (which holds no argument
parsing) and turns its errors into messages and exit codes; :mod:`~restr.commands.options`
holds the options several commands share.
"""
