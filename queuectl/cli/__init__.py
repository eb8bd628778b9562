"""The command-line interface: parser.py (stdlib only), commands.py, main.py;
completion.py (the shell scripts) and manual.py (the man page) are built from the parser."""
