"""The external APIs that ship with stackflask, one package each."""
