"""Weight layouts that are not PyTorch state dicts (Keras' HDF5 files), read without their framework."""
