echo "no #! line: exec fails with ENOEXEC"
