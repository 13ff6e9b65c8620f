"""`transferzoo run PIPELINE.yaml`: the whole job from one file.

- `config`: the pipeline file's typed sections (FitConfig, ExportOptions and ServeOptions reused);
- `runner`: the stages (fit -> export -> serve check) with fingerprints, so a re-run resumes;
- `serve_check`: `transferzoo serve` started on a free loopback port and checked with tritonclient;
- `report`: the one-page report.md.

Above the four packages: it may import any of them; none of them imports it.
"""
