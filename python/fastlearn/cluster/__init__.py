"""K-means with a fused distance-and-argmin kernel (scikit-learn compatible)."""

from fastlearn.cluster._kmeans import KMeans, kmeans_plusplus

__all__ = ["KMeans", "kmeans_plusplus"]
