"""The transcoder worker: its agents (``agents``) hand each job attempt (``jobs``, pure data) to
the job runner (``runner``: S3 and the asset actor), which drives the media-processing core:
probe a master file, encode the HLS ladder and the thumbnail into a local directory
(``probe``, ``ladder``, ``pipeline``, ``ffmpeg_runner``: local files in, local files out; no S3,
no Kafka)."""
