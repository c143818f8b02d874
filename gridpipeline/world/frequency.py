"""System frequency: an aggregate swing equation for the synchronous area the sample grid belongs to.

The area is one machine (the classic single-area model, Kundur, *Power System Stability and
Control*, ch. 11): load ``S`` MW, inertia constant ``H`` s on that base, load damping ``D`` (per cent
of load per per cent of frequency), and governors with droop ``R`` and time constant ``Tg`` holding
a primary reserve of ``reserve_share`` of the load (ENTSO-E's FCR is about 1 %; a split area may
hold more). In per unit of ``S`` and ``f0``::

    2H d(df)/dt = dPm - dP_loss + dP_relief - D df
    Tg d(dPm)/dt = -df / R - dPm          (|dPm| within the reserve, up and down)

Secondary control (AGC, the automatic frequency restoration reserve) then brings the frequency
back: an integral controller on the area control error, which for one area is the frequency bias
``B = 1/R + D`` times the deviation, with time constant ``Ts`` (``secondary_s``; 0 turns it off)::

    Ts d(dPs)/dt = -B df                  (|dPs| within ``secondary_reserve_share``)

In quasi-steady state ``dPs`` follows the imbalance with time constant ``Ts``: with Ts = 100 s it
has taken over 95 % of a loss about 5.5 minutes after it (ENTSO-E's full activation time for aFRR
is 5 minutes), and the governors are free again.

A frequency event is a loss of generation in the area, ``dP_loss`` (a scenario parameter). The
sample grid is a ``share`` of the area, and its under-frequency response stands for the same scheme
acting in every part of the area: its local relief (load shed, batteries discharged, MW) counts as
``local / share`` in the equation. That is how a local responder can arrest the area's frequency.

Defaults: a 30 GW area with H = 5 s, D = 1, R = 5 %, Tg = 6 s and 3 % reserve, Ts = 100 s and 10 %
secondary reserve. A loss of 6 % of the load then starts falling at 0.3 Hz/s, passes 49.0 Hz after
9.5 s and without shedding would settle at 48.5 Hz on the primary response alone, since reserve and
damping do not cover it (secondary control is far too slow to help in those seconds): a case for the first stages of the
under-frequency load-shedding plan. A loss of 8 % falls at 0.4 Hz/s, passes 49.0 Hz after 4.4 s
and would settle at 47.5 Hz, below the plan's last stage (measured with this module, 0.1-s steps).

Pure (numbers in, numbers out); the simulator's dynamics thread steps it in real time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AreaParams:
    f0_hz: float = 50.0
    load_mw: float = 30_000.0
    inertia_s: float = 5.0
    damping: float = 1.0
    droop: float = 0.05
    governor_s: float = 6.0
    reserve_share: float = 0.03
    secondary_s: float = 100.0
    secondary_reserve_share: float = 0.10


@dataclass
class FrequencyModel:
    """State: ``df_hz`` (frequency deviation), ``pm_mw`` (governor response), ``ps_mw`` (secondary
    control) and ``settled_mw`` (imbalance the area settled between events, see :meth:`rebase`).
    ``share``: the local grid's share of the area's load (its relief counts ``1/share`` times)."""

    params: AreaParams = AreaParams()
    share: float = 1e-3
    df_hz: float = 0.0
    pm_mw: float = 0.0
    ps_mw: float = 0.0
    settled_mw: float = 0.0
    loss_mw: float = 0.0
    t_s: float = 0.0

    @property
    def frequency_hz(self) -> float:
        return self.params.f0_hz + self.df_hz

    def rocof_hz_s(self, local_relief_mw: float = 0.0) -> float:
        """The rate of change of frequency now (Hz/s)."""
        p = self.params
        relief = local_relief_mw / max(self.share, 1e-12)
        dfpu = self.df_hz / p.f0_hz
        acc_pu = (self.pm_mw + self.ps_mw + self.settled_mw - self.loss_mw + relief) / p.load_mw - p.damping * dfpu
        return acc_pu / (2 * p.inertia_s) * p.f0_hz

    def step(self, dt_s: float, local_relief_mw: float = 0.0, substeps: int | None = None) -> float:
        """Advance ``dt_s`` seconds (explicit Euler in steps of at most 20 ms) with the local relief
        held; returns the frequency (Hz)."""
        p = self.params
        n = substeps or max(int(dt_s / 0.02 + 0.999), 1)
        h = dt_s / n
        reserve = p.reserve_share * p.load_mw
        secondary = p.secondary_reserve_share * p.load_mw
        bias = (1 / p.droop + p.damping) * p.load_mw  # MW per pu of frequency
        for _ in range(n):
            dfdt = self.rocof_hz_s(local_relief_mw)
            dfpu = self.df_hz / p.f0_hz
            target = -dfpu / p.droop * p.load_mw
            dpm = (target - self.pm_mw) / p.governor_s
            self.df_hz += h * dfdt
            self.pm_mw = min(max(self.pm_mw + h * dpm, -reserve), reserve)
            if p.secondary_s > 0:
                self.ps_mw = min(max(self.ps_mw - h * bias * dfpu / p.secondary_s, -secondary), secondary)
            self.t_s += h
        return self.frequency_hz

    def rebase(self, local_relief_mw: float) -> None:
        """A new event counts its relief from zero: what the local relief of the last one stood for
        and what secondary control holds are taken over as settled (the area's operators have
        redispatched), so the balance, and the frequency, carry on unchanged."""
        self.settled_mw += self.ps_mw + local_relief_mw / max(self.share, 1e-12)
        self.ps_mw = 0.0

    def steady_state_df_hz(self, local_relief_mw: float = 0.0) -> float:
        """Where the frequency settles on the primary response alone for the present loss and relief
        (governors at their droop or out of reserve, damping the rest; before secondary control)."""
        p = self.params
        net_pu = (self.loss_mw - self.settled_mw - local_relief_mw / max(self.share, 1e-12)) / p.load_mw
        reserve_pu = p.reserve_share
        # within reserve: net = df_pu (1/R + D)
        df_pu = -net_pu / (1 / p.droop + p.damping)
        if abs(df_pu) / p.droop > reserve_pu:  # governors saturate: net = +-reserve + D df
            df_pu = -(net_pu - reserve_pu * (1 if net_pu > 0 else -1)) / p.damping
        return df_pu * p.f0_hz
