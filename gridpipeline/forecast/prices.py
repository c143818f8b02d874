"""Day-ahead price forecast beyond the published prices: a LEAR model, as-of.

The exchange publishes the prices of delivery day D at 12:00 Europe/Berlin on D-1, so a plan made in
the morning knows the rest of today and a plan made in the afternoon knows tomorrow too. Beyond that
the plan needs a forecast, and the dispatch trades on its shape: the 2018 backtest put about 20 of the
points it missed on the price forecast.

The model is LEAR, the lasso-estimated autoregressive benchmark of the electricity price forecasting
literature (Lago, Marcjasz, De Schutter and Weron, "Forecasting day-ahead electricity prices: a review
of state-of-the-art algorithms, best practices and an open-access benchmark", Applied Energy 293,
2021), on prices alone (the utility has no national load or wind forecast):

* one model per local hour of the target day; features: the 24 prices of each of the days 1, 2, 3
  and 7 days before it, and the day of the week;
* prices and targets normalised by the calibration window's median and median absolute deviation and
  passed through ``asinh`` (the variance-stabilising transform of Uniejewski et al., which keeps
  spikes and negative prices from dominating the fit);
* the penalty chosen by AIC (``LassoLarsIC``), calibrated on the last ``window_days`` known days;
* two days ahead and further, recursively, the forecast days standing in for the unpublished ones.

With fewer than ``MIN_TRAIN_DAYS`` days to calibrate on it is not fitted, and the caller keeps its
fallback (the median of the same hour over the last week).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

TZ = "Europe/Berlin"
LAGS = (1, 2, 3, 7)
MIN_TRAIN_DAYS = 28


def daily_matrix(known: pd.Series, tz: str = TZ) -> pd.DataFrame:
    """Hourly prices -> one row per local day, 24 columns (local hours); the doubled hour of the autumn
    change is averaged, the missing hour of the spring change interpolated, and gaps stay NaN."""
    s = known.dropna()
    if s.empty:
        return pd.DataFrame(columns=range(24), dtype=float)
    local = s.index.tz_convert(tz)
    df = pd.DataFrame({"day": local.tz_localize(None).normalize(), "hour": local.hour, "p": s.to_numpy(float)})
    m = df.pivot_table(index="day", columns="hour", values="p", aggfunc="mean").reindex(columns=range(24))
    m = m.reindex(pd.date_range(m.index.min(), m.index.max(), freq="D"))
    full = m.notna().sum(axis=1) >= 22
    m.loc[full] = m.loc[full].interpolate(axis=1, limit_direction="both")
    return m


def _features(m: np.ndarray, i: int) -> np.ndarray | None:
    """Features of target day index ``i`` from the day matrix (None when a lag day is missing)."""
    parts = []
    for lag in LAGS:
        if i - lag < 0:
            return None
        row = m[i - lag]
        if np.isnan(row).any():
            return None
        parts.append(row)
    return np.concatenate(parts)


class LearModel:
    """Calibrated on the known day matrix; :meth:`predict_days` forecasts the days after the last."""

    def __init__(self, window_days: int = 182):
        self.window_days = window_days
        self.models: list | None = None
        self.last_day: pd.Timestamp | None = None
        self.train_days = 0

    def fit(self, days: pd.DataFrame) -> LearModel:
        from sklearn.linear_model import LassoLarsIC

        self.fitted_on = days.index.max() if len(days) else None
        complete = np.nonzero(days.notna().all(axis=1).to_numpy())[0]
        days = days.iloc[:complete[-1] + 1] if len(complete) else days.iloc[:0]  # a partial last day is forecast
        days = days.iloc[-(self.window_days + max(LAGS)):]
        self.last_day = days.index.max() if len(days) else None
        m = days.to_numpy(float)
        vals = m[np.isfinite(m)]
        if vals.size == 0:
            self.models = None
            return self
        self.med = float(np.median(vals))
        self.mad = float(np.median(np.abs(vals - self.med))) * 1.4826 or 1.0
        z = self._z(m)
        X, Y = [], []
        for i in range(max(LAGS), len(z)):
            f = _features(z, i)
            if f is None or np.isnan(z[i]).any():
                continue
            X.append(np.concatenate([f, self._dow(days.index[i])]))
            Y.append(z[i])
        self.train_days = len(X)
        if self.train_days < MIN_TRAIN_DAYS:
            self.models = None
            return self
        X, Y = np.asarray(X), np.asarray(Y)
        self.mu, self.sd = X.mean(axis=0), X.std(axis=0)
        self.sd[self.sd < 1e-9] = 1.0
        Xs = (X - self.mu) / self.sd
        self.models = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for h in range(24):
                # with fewer days than features AIC needs the noise variance given: the persistence
                # error's (the same hour the day before), an upper bound that errs to the sparse side
                nv = None if len(Y) > X.shape[1] + 1 else float(np.var(Y[:, h] - X[:, h])) or 1.0
                self.models.append(LassoLarsIC(criterion="aic", noise_variance=nv).fit(Xs, Y[:, h]))
        self._z_days = z
        return self

    def _z(self, m: np.ndarray) -> np.ndarray:
        return np.arcsinh((m - self.med) / self.mad)

    def _unz(self, z: np.ndarray) -> np.ndarray:
        return np.sinh(z) * self.mad + self.med

    @staticmethod
    def _dow(day: pd.Timestamp) -> np.ndarray:
        v = np.zeros(7)
        v[pd.Timestamp(day).dayofweek] = 1.0
        return v

    @property
    def ready(self) -> bool:
        return self.models is not None

    def predict_days(self, n: int) -> pd.DataFrame:
        """The ``n`` local days after the last known day, 24 local hours each (EUR/MWh)."""
        if not self.ready:
            raise RuntimeError("the price model is not calibrated")
        z = list(self._z_days[-max(LAGS):])
        out = []
        for k in range(1, n + 1):
            day = self.last_day + pd.Timedelta(days=k)
            f = _features(np.asarray(z), len(z))
            if f is None:   # a gap among the lag days: the last full day again
                f = np.concatenate([z[-1]] * len(LAGS))
            x = (np.concatenate([f, self._dow(day)]) - self.mu) / self.sd
            zt = np.array([mdl.predict(x[None, :])[0] for mdl in self.models])
            z.append(zt)
            out.append(self._unz(zt))
        idx = pd.date_range(self.last_day + pd.Timedelta(days=1), periods=n, freq="D")
        return pd.DataFrame(out, index=idx, columns=range(24))


def to_hours(days: pd.DataFrame, hours: pd.DatetimeIndex, tz: str = TZ) -> pd.Series:
    """Day-matrix values on UTC ``hours`` (NaN where a day is not in the matrix)."""
    local = hours.tz_convert(tz)
    d = local.tz_localize(None).normalize()
    pos = days.index.get_indexer(d)
    vals = np.full(len(hours), np.nan)
    ok = pos >= 0
    vals[ok] = days.to_numpy(float)[pos[ok], np.asarray(local.hour)[ok]]
    return pd.Series(vals, index=hours)


class PriceForecaster:
    """Callable for :func:`gridpipeline.sources.prices.price_curve`: ``(known, hours) -> prices`` on the
    unpublished ``hours`` (NaN where it cannot tell, for the caller's fallback). Re-calibrates when a
    new day is published; a calibration takes about a second on this machine."""

    def __init__(self, window_days: int = 182):
        self.window_days = window_days
        self._model: LearModel | None = None

    def __call__(self, known: pd.Series, hours: pd.DatetimeIndex) -> pd.Series:
        days = daily_matrix(known)
        if days.empty:
            return pd.Series(np.nan, index=hours)
        if self._model is None or self._model.fitted_on != days.index.max():
            self._model = LearModel(self.window_days).fit(days)
        if not self._model.ready:
            return pd.Series(np.nan, index=hours)
        last = hours.tz_convert(TZ).tz_localize(None).normalize().max()
        n = max(int((last - self._model.last_day).days), 0)
        if n == 0:
            return pd.Series(np.nan, index=hours)
        return to_hours(self._model.predict_days(n), hours)


__all__ = ["LearModel", "PriceForecaster", "daily_matrix", "to_hours"]
