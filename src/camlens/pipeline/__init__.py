"""The pieces of a folder run (:mod:`camlens.run`), one module per job.

:mod:`camlens.pipeline.maps`: one image's maps in the compact form a run keeps and writes (CAMs at the
layer's resolution, image-shaped maps at the model's input size) and back at the photo's size.
"""
