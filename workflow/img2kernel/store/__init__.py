"""The sharded array store (webdataset's tar layout) and the crop samplers that read it."""
