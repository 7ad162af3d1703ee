"""magvit2.data: video/image I/O (PyAV) and the training data pipeline.

``config`` (:class:`DataConfig`), ``media`` (which files, their items, decoding one sample), ``augment``
(colour changes), ``dataset`` (the resumable streams and the batches of each step), ``video_io``.
"""

from .config import DataConfig
from .dataset import BatchStream, ImageDataset, JointBatchDataset, VideoClipDataset, make_loader
from .media import MediaIndex, find_files
from .video_io import (
    VideoInfo,
    VideoReadError,
    VideoWriter,
    encode_png,
    iter_chunks,
    iter_frames,
    probe,
    read_image,
    read_video,
    to_tensor,
    to_uint8,
    write_png,
    write_png_frames,
    write_video,
)

__all__ = [
    "BatchStream",
    "DataConfig",
    "ImageDataset",
    "JointBatchDataset",
    "MediaIndex",
    "VideoClipDataset",
    "VideoInfo",
    "VideoReadError",
    "VideoWriter",
    "encode_png",
    "find_files",
    "iter_chunks",
    "iter_frames",
    "make_loader",
    "probe",
    "read_image",
    "read_video",
    "to_tensor",
    "to_uint8",
    "write_png",
    "write_png_frames",
    "write_video",
]
