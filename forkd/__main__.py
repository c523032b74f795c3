from forkd.cli import main

main(prog_name="forkd")
