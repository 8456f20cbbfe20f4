"""One module per command; each is thin: parse, call one core function, render the result."""
