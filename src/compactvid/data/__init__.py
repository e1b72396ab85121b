"""Reading and writing YouTube-8M data: TFRecord framing, Example protos, decoding, the training loader."""

from compactvid.data.yt8m import ReadReport, Video, iter_videos

__all__ = ["iter_videos", "Video", "ReadReport"]
