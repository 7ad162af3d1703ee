"""Pattern tables: nearest-row search in chunks, k-means with pattern 0 held at zero."""

import torch

from magvit2.modules.patterns import kmeans, nearest


def test_nearest_matches_brute_force_across_chunks():
    torch.manual_seed(0)
    x, table = torch.randn(2, 37, 5), torch.randn(11, 5)
    brute = torch.cdist(x.reshape(-1, 5), table).argmin(1).reshape(2, 37)
    assert torch.equal(nearest(x, table, chunk=8), brute)
    assert nearest(x[:, :0], table).shape == (2, 0)


def test_kmeans_converges_to_the_means_of_its_clusters_with_centroid_zero_held():
    """Lloyd's iterations on 4 blobs: centroid 0 stays exactly zero, every other centroid ends as the
    mean of the rows nearest it (a fixed point), and the squared error is far below that of the
    table's random start."""
    gen = torch.Generator().manual_seed(0)
    blobs = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    x = blobs.repeat_interleave(50, 0) + 0.3 * torch.randn(200, 2, generator=gen)
    found = kmeans(x, 6, iters=30, gen=torch.Generator().manual_seed(1))
    assert torch.equal(found[0], torch.zeros(2))
    index = nearest(x, found)
    for j in index.unique().tolist():
        if j:
            assert torch.allclose(found[j], x[index == j].mean(0), atol=1e-5), j
    error = (x - found[index]).square().sum(1).mean()
    start = kmeans(x, 6, iters=0, gen=torch.Generator().manual_seed(1))
    assert error < 0.5 * (x - start[nearest(x, start)]).square().sum(1).mean()
