"""Data preparation: synthetic UCF-101, ffmpeg re-encode (extract), webdataset shards, manifests."""
