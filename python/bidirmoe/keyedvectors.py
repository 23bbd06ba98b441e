# TEMPORARY development shim; replaced by the full implementation.
import numpy as np
class KeyedVectors:
    def __init__(self, vector_size, count=0, dtype=np.float32):
        self.vector_size = vector_size
        self.vectors = np.zeros((count, vector_size), dtype=dtype)
        self.index_to_key = []; self.key_to_index = {}; self.expandos = {}; self.norms = None
    def __len__(self): return len(self.index_to_key)
    def __contains__(self, k): return k in self.key_to_index
    def __getitem__(self, k): return self.vectors[self.key_to_index[k]]
    def most_similar(self, word, topn=10):
        v = self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)
        s = v @ v[self.key_to_index[word]]
        order = [i for i in np.argsort(-s) if i != self.key_to_index[word]][:topn]
        return [(self.index_to_key[i], float(s[i])) for i in order]
