"""Media-processing core of the transcoder worker: probe a master file, encode the HLS ladder and
the thumbnail into a local directory. Local files in, local files out; no S3, no Kafka."""
