"""What a person reads of a run: its figures (`figures`: confusion, curves, mistakes, as PNG bytes)
and report.md (`markdown`, plus the finetuning section in `finetune`).

May import `zoo` (image decoding for thumbnails); nothing else of the project.
"""
