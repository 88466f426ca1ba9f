"""``pixdiff serve``: a web page and an HTTP API over loaded models, with the denoising streamed
live (the optional ``serve`` extra: FastAPI, uvicorn). See docs/serve.md.

The app (:mod:`pixdiff.serve.app`) checks each request into a task (:mod:`~pixdiff.serve.build`),
queues it (:mod:`~pixdiff.serve.jobs`: concurrency limit, timeout, cancellation, dynamic
batching) and runs the same pipelines as the CLI through the same request object
(:mod:`~pixdiff.serve.tasks`).
"""
