"""The `transferzoo` command line and pipeline runner. It sits above zoo/, transfer/, export/ and
serve/; none of them imports it."""
