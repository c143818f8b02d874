"""Diagonal of the WLS residual covariance Omega = R - H G^-1 H^T (for normalised residuals).

H is the analytic Jacobian of ``wls.WlsModel`` at the estimated state; diag(H G^-1 H^T) is exact:
dense for small systems, otherwise Takahashi's selected inverse on a sparse LDL^T factor of G (only
the entries of G^-1 on the factor's pattern), with a blocked solve as the last resort.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, solve_triangular
from scipy.sparse.linalg import splu

from gridpipeline.grid.wls import WlsModel

DENSE_LIMIT = 800

__all__ = ["DENSE_LIMIT", "residual_covariance_diag"]


def residual_covariance_diag(wls: WlsModel, V: np.ndarray, *, dense_limit: int = DENSE_LIMIT) -> np.ndarray:
    """diag(Omega) = sigma_i^2 - (H G^-1 H^T)_ii for every WLS row (per unit squared)."""
    H = wls.jacobian(V)
    w = 1.0 / wls.sigma ** 2
    G = (H.T @ sp.diags(w) @ H).tocsc()
    # symmetric diagonal scaling: diag(H G^-1 H^T) = diag(Hs Gs^-1 Hs^T), Hs = H S, Gs = S G S
    dg = G.diagonal()
    scale = 1.0 / np.sqrt(np.where(dg > 0, dg, 1.0))
    S = sp.diags(scale)
    G = (S @ G @ S).tocsc()
    H = (H @ S).tocsr()
    n = G.shape[0]
    if n <= dense_limit:
        d = _diag_dense(G, H)
    else:
        try:
            d = _diag_selected_inverse(G, H)
        except _SelectedInverseError:
            d = _diag_blocked(G, H)
    return wls.sigma ** 2 - d


def _diag_dense(G: sp.spmatrix, H: sp.spmatrix) -> np.ndarray:
    c, _low = cho_factor(G.toarray(), lower=True)
    L = np.tril(c)
    X = solve_triangular(L, H.T.toarray(), lower=True)
    return np.einsum("ij,ij->j", X, X)


def _diag_blocked(G: sp.spmatrix, H: sp.spmatrix, block: int = 512) -> np.ndarray:
    lu = splu(G.tocsc())
    Ht = H.T.tocsc()
    m = H.shape[0]
    out = np.empty(m)
    for s in range(0, m, block):
        e = min(m, s + block)
        B = Ht[:, s:e].toarray()
        X = lu.solve(B)
        out[s:e] = np.einsum("ij,ij->j", B, X)
    return out


class _SelectedInverseError(RuntimeError):
    pass


def _diag_selected_inverse(G: sp.spmatrix, H: sp.spmatrix) -> np.ndarray:
    """Takahashi recurrences on G = P^T L D L^T P (symmetric SuperLU ordering)."""
    n = G.shape[0]
    lu = splu(G.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
              options={"SymmetricMode": True})
    p = lu.perm_c
    if not np.array_equal(lu.perm_r, p):
        raise _SelectedInverseError("pivoting broke symmetry")
    L = lu.L.tocsc()
    L.sort_indices()
    D = lu.U.diagonal()
    if np.any(D <= 0):
        raise _SelectedInverseError("gain matrix not positive definite")
    indptr, indices, data = L.indptr, L.indices, L.data
    cols: list[dict] = [None] * n  # type: ignore[list-item]
    zdiag = np.zeros(n)
    rows_all, cols_all, vals_all = [], [], []
    for j in range(n - 1, -1, -1):
        s, e = indptr[j], indptr[j + 1]
        r = indices[s:e]
        v = data[s:e]
        sel = r > j
        S = r[sel]
        l = v[sel]
        k = len(S)
        if k == 0:
            zdiag[j] = 1.0 / D[j]
            cols[j] = {}
            continue
        M = np.empty((k, k))
        Sl = S.tolist()
        try:
            for a in range(k):
                ia = Sl[a]
                M[a, a] = zdiag[ia]
                col = cols[ia]
                for b in range(a + 1, k):
                    val = col[Sl[b]]
                    M[a, b] = val
                    M[b, a] = val
        except KeyError as exc:
            raise _SelectedInverseError("factor pattern not chordal") from exc
        zS = -(M @ l)
        zdiag[j] = 1.0 / D[j] - float(l @ zS)
        cols[j] = dict(zip(Sl, zS.tolist()))
        rows_all.append(S)
        cols_all.append(np.full(k, j))
        vals_all.append(zS)
    R = np.concatenate(rows_all) if rows_all else np.zeros(0, int)
    C = np.concatenate(cols_all) if cols_all else np.zeros(0, int)
    Vv = np.concatenate(vals_all) if vals_all else np.zeros(0)
    # permuted -> original ordering: permuted index p[i] holds original i
    inv = np.empty(n, dtype=np.int64)
    inv[p] = np.arange(n)
    oi, oj = inv[R], inv[C]
    diag_idx = inv[np.arange(n)]
    Z = sp.csr_matrix((np.r_[Vv, Vv, zdiag], (np.r_[oi, oj, diag_idx], np.r_[oj, oi, diag_idx])), shape=(n, n))
    H = H.tocsr()
    return np.asarray((H @ Z).multiply(H).sum(axis=1)).ravel()


# ----------------------------------------------------------------------------- chi-squared
