"""The sweep: standard, regularised, ensemble, distillation and data-law stages, then the fits.

Stages run in priority order under a wall-clock budget; every group of M points of one size is one vmapped
program (papers.infinite_compute.recipe), stored as it finishes, so re-running the same command resumes.
A group whose estimated time would pass the deadline is skipped and reported, never half-run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from core import lm
from core import train as train_lib
from core.nn import transformer as tfm
from papers.infinite_compute import data as data_lib
from papers.infinite_compute import recipe
from papers.infinite_compute.recipe import Point


# Stage names in run order (the order the budget respects): "distill" trains the distillation size's
# ensemble (the teacher) and then the students; "ensembles" the other sizes' ensembles.
STAGES = ("standard", "search1", "distill", "ensembles", "data_law", "search2")


def _log(message: str) -> None:
    print(f"[infinite_compute] {message}", flush=True)


def snap(value: float, grid: Sequence[float]) -> float:
    return min(grid, key=lambda g: abs(math.log(g / value)) if g > 0 and value > 0 else abs(g - value))


def _finite_or_inf(value) -> float:
    """Diverged members evaluate to NaN; inf keeps them out of every min() without special cases."""
    value = float(value)
    return value if np.isfinite(value) else float("inf")


class Sweep:
    def __init__(self, config, workdir: str, deadline: float | None = None, sizes: Sequence[str] | None = None,
                 checkpoint_dir: str | None = None):
        """sizes: train only these (e.g. one share per GPU, all writing to one workdir); checkpoint_dir: where
        member params go (default workdir/checkpoints), so the small point JSONs can live elsewhere."""
        self.config = config
        self.workdir = workdir
        self.sizes = list(config.sizes) if not sizes else list(sizes)
        unknown = sorted(set(self.sizes) - set(config.sizes))
        if unknown:
            raise ValueError(f"Unknown sizes {unknown}; the config has {sorted(config.sizes)}.")
        self.store = recipe.PointStore(workdir, checkpoint_dir)
        self.deadline = deadline
        arrays, self.manifest = data_lib.load_fixed_token_set(config.data.dir)
        seq_len = config.data.seq_len
        self.train_windows = data_lib.windows(arrays["train"], seq_len)
        self.eval_windows = {name: jnp.asarray(data_lib.windows(arrays[name], seq_len))
                             for name in ("validation", "prose") if name in arrays}
        self.num_real = len(self.train_windows)
        self.vocab_size = int(self.manifest["vocab_size"])
        self.programs: dict[tuple[str, int], recipe.GroupProgram] = {}
        self.synthetic: dict[str, np.ndarray] = {}
        self.flops_done, self.seconds_done = 0.0, 0.0
        self.skipped: list[str] = []

    # ----------------------------------------------------------------------------------- machinery
    def cfg(self, size: str) -> tfm.TransformerConfig:
        return recipe.model_config(self.config.sizes[size].to_dict(), self.vocab_size, self.config.data.seq_len)

    def program(self, size: str, synthetic_capacity: int = 0) -> recipe.GroupProgram:
        key = (size, synthetic_capacity)
        if key not in self.programs:
            c = self.config
            self.programs[key] = recipe.make_group_program(
                self.cfg(size), c.members, c.optim, c.data.batch_size, self.num_real, synthetic_capacity,
                c.chunk_steps, c.eval_batch, jnp.dtype(c.train.compute_dtype))
        return self.programs[key]

    def windows_with_synthetic(self) -> tuple[jax.Array, dict[str, tuple[int, int]], int]:
        parts, slices, offset = [self.train_windows], {}, self.num_real
        for name in sorted(self.synthetic):
            slices[name] = (offset, len(self.synthetic[name]))
            parts.append(self.synthetic[name])
            offset += len(self.synthetic[name])
        return jnp.asarray(np.concatenate(parts)), slices, offset - self.num_real

    def estimate_seconds(self, size: str, steps: int) -> float:
        c = self.config
        flops = c.members * steps * c.data.batch_size * c.data.seq_len * recipe.flops_per_token(
            self.cfg(size), c.data.seq_len)
        rate = self.flops_done / self.seconds_done if self.seconds_done > 5 else c.assumed_flops_per_s
        return flops / rate, flops

    def run_points(self, points: Sequence[Point]) -> dict[str, dict]:
        """Trains the points not yet stored, M at a time per size (padded with seed replicates)."""
        c = self.config
        todo = [p for p in dict.fromkeys(points) if not self.store.has(p.id)]
        by_size: dict[str, list[Point]] = {}
        for p in todo:
            by_size.setdefault(p.size, []).append(p)
        for size, pending in by_size.items():
            windows, slices, capacity = (self.windows_with_synthetic() if any(p.synthetic for p in pending)
                                         else (None, {}, 0))
            pending.sort(key=lambda p: -recipe.steps_for(p, recipe.real_windows(p, self.num_real, c.data.seq_len),
                                                          c.data.batch_size))
            for start in range(0, len(pending), c.members):
                group = self._pad(pending[start:start + c.members])
                steps = max(recipe.steps_for(p, recipe.real_windows(p, self.num_real, c.data.seq_len),
                                             c.data.batch_size) for p in group)
                seconds, flops = self.estimate_seconds(size, steps)
                if self.deadline is not None and time.time() + seconds > self.deadline:
                    self.skipped.extend(p.id for p in group[: len(pending[start:start + c.members])])
                    _log(f"skip {size} group of {steps} steps (~{seconds:.0f}s): past the time budget")
                    continue
                self._train_and_store(size, group, windows, slices, capacity, flops)
        self.store.flush()
        return {p.id: self.store.get(p.id) for p in points if self.store.has(p.id)}

    def _pad(self, group: list[Point]) -> list[Point]:
        """Fills a group to M with seed replicates of its own points (free in wall time: same steps)."""
        padded, seed = list(group), 1
        while len(padded) < self.config.members:
            base = group[(len(padded) - len(group)) % len(group)]
            replicate = dataclasses.replace(base, seed=base.seed + seed)
            seed += 1
            if replicate not in padded and not self.store.has(replicate.id):
                padded.append(replicate)
        return padded

    def _train_and_store(self, size, group, windows, slices, capacity, flops):
        c = self.config
        program = self.program(size, capacity)
        windows = jnp.asarray(self.train_windows) if windows is None else windows
        started = time.perf_counter()
        states, info = recipe.train_group(program, group, windows, self.num_real, slices, c.data.batch_size,
                                          c.data.seq_len, c.chunk_steps, c.optim.warmup_fraction)
        losses = {name: np.asarray(program.eval_members(states, w)) for name, w in self.eval_windows.items()}
        seconds = time.perf_counter() - started
        self.flops_done += flops
        self.seconds_done += seconds
        cfg = self.cfg(size)
        for i, point in enumerate(group):
            record = dict(point.to_dict(), id=point.id, steps=info["steps"][i], train_loss=info["train_loss"][i],
                          nonfinite_steps=info["nonfinite_steps"][i],
                          non_embedding_params=recipe.non_embedding_params(cfg),
                          group=[p.id for p in group], group_seconds=seconds,
                          **{f"{name}_loss": _finite_or_inf(v[i]) for name, v in losses.items()})
            self.store.save_params(point.id, jax.tree.map(lambda x: x[i], states.params), info["steps"][i])
            self.store.put(point.id, record)
        _log(f"{size}: {len(group)} points in {seconds:.1f}s ({flops / seconds / 1e12:.1f} TFLOP/s) "
             + " ".join(f"{p.recipe[:3]} e{p.epochs:g} lr{p.learning_rate:g} wd{p.weight_decay:g} "
                        f"-> {losses['validation'][i]:.3f}" for i, p in enumerate(group)))
        return states

    def member_states(self, size: str, points: Sequence[Point]) -> train_lib.TrainState:
        """Stacked params of stored points (restored from their orbax checkpoints)."""
        program = self.program(size)
        skeleton = recipe.init_states(program, [p.seed for p in points])
        params = [self.store.load_params(p.id, jax.tree.map(lambda x: x[i], skeleton.params))
                  for i, p in enumerate(points)]
        return dataclasses.replace(skeleton, params=jax.tree.map(lambda *xs: jnp.stack(xs), *params))

    def best(self, size: str, recipe_name: str, seed: int = 0, train_tokens: int = 0) -> dict | None:
        rows = [r for r in self.store.all() if r.get("size") == size and r.get("recipe") == recipe_name
                and r["seed"] == seed and r["train_tokens"] == train_tokens]
        return min(rows, key=lambda r: r["validation_loss"]) if rows else None

    # -------------------------------------------------------------------------------------- stages
    def standard(self) -> None:
        s = self.config.standard
        self.run_points([Point(size, "standard", lr, s.weight_decay, e)
                         for size in self.sizes for lr in s.learning_rates for e in s.epochs])

    def regularized_round(self, size: str) -> bool:
        """One step of the local search from the current best; True when it holds a certificate."""
        g = self.config.grid
        best = self.best(size, "regularized")
        smaller = self.smaller_regularized_best(size)
        if best is None and smaller is not None:
            # the next smaller size's best so far: a start, not a transfer (the paper: transferred settings
            # break monotonicity), since the search below still needs its own certificate. A larger model
            # wants at least the smaller one's regularisation; starting it from the standard recipe's lr and
            # a fixed wd left s4 / s5 one grid step from their start after the budget's rounds (H200, s15).
            center = Point(size, "regularized", smaller["learning_rate"], smaller["weight_decay"],
                           smaller["epochs"])
        elif best is None:
            std = self.best(size, "standard")
            if std is None:
                return False
            center = Point(size, "regularized", std["learning_rate"], self.config.regularized.start_weight_decay,
                           snap(min(std["epochs"] * 2, max(g.epochs)), g.epochs))
        else:
            center = Point(size, "regularized", best["learning_rate"], best["weight_decay"], best["epochs"])
        points = [center]
        for field, axis in (("learning_rate", g.learning_rates), ("weight_decay", g.weight_decays),
                            ("epochs", g.epochs)):
            index = list(axis).index(snap(getattr(center, field), axis))
            for j in (index - 1, index + 1):
                if 0 <= j < len(axis):
                    points.append(dataclasses.replace(center, **{field: axis[j]}))
        results = self.run_points(points)
        if len(results) < len(points):
            return False
        best_id = min(results, key=lambda k: results[k]["validation_loss"])
        return best_id == center.id

    def smaller_regularized_best(self, size: str) -> dict | None:
        """The best regularised point of the largest smaller size that has one (sizes are ordered by
        parameters), when `regularized.start_from_smaller` is on."""
        if not self.config.regularized.get("start_from_smaller", False) or size not in self.sizes:
            return None
        for other in reversed(self.sizes[: self.sizes.index(size)]):
            found = self.best(other, "regularized")
            if found is not None:
                return found
        return None

    def regularized(self, rounds: int) -> dict[str, dict]:
        """Local-search rounds, round-robin over sizes, until each size has done `rounds` (or holds a
        certificate); progress is stored, so a resumed sweep continues the search where it stopped."""
        for _ in range(rounds):
            for size in self.sizes:
                name = f"regsearch_{size}"
                state = self.store.get(name) or dict(rounds=0, certificate=False)
                if state["certificate"] or state["rounds"] >= rounds:
                    continue
                before = len(self.skipped)
                certificate = self.regularized_round(size)
                if len(self.skipped) == before and self.best(size, "regularized") is not None:
                    self.store.put(name, dict(rounds=state["rounds"] + 1, certificate=certificate))
        return {size: self.store.get(f"regsearch_{size}") for size in self.sizes}

    def ensemble_points(self, size: str) -> list[Point] | None:
        """K members at the paper's ensemble recipe (2x epochs, 1/2 wd of the best regularised config so
        far); the plan is stored on first use, so later search rounds do not change a half-done ensemble."""
        e = self.config.ensemble
        plan = self.store.get(f"ensemble_plan_{size}")
        if plan is None:
            best = self.best(size, "regularized")
            if best is None:
                return None
            plan = dict(learning_rate=best["learning_rate"], weight_decay=best["weight_decay"] * e.weight_decay_factor,
                        epochs=best["epochs"] * e.epoch_factor, from_point=best["id"])
            self.store.put(f"ensemble_plan_{size}", plan)
        return [Point(size, "ensemble", plan["learning_rate"], plan["weight_decay"], plan["epochs"], seed=k)
                for k in range(self.config.members)]

    def ensembles(self, sizes: Sequence[str] | None = None) -> None:
        for size in self.sizes if sizes is None else [s for s in sizes if s in self.sizes]:
            points = self.ensemble_points(size)
            if points is None:
                continue
            name = f"ensemble_{size}"
            if self.store.has(name):
                continue
            self.run_points(points)
            if not all(self.store.has(p.id) for p in points):
                continue
            states = self.member_states(size, points)
            masks = recipe.subset_masks(len(points))
            program = self.program(size)
            record = dict(points=[p.id for p in points], members=len(points))
            for split, windows in self.eval_windows.items():
                losses = np.asarray(program.eval_subsets(states, windows, jnp.asarray(masks)))
                record[split] = {",".join(map(str, np.flatnonzero(m).tolist())): float(v)
                                 for m, v in zip(masks, losses)}
            self.store.put(name, record)
            _log(f"{size}: ensemble of {len(points)} -> {min(record['validation'].values()):.3f}")

    def synthesize(self, name: str, teachers: Sequence[Point], count: int, key: int) -> np.ndarray:
        """count windows [EOS] + seq_len tokens sampled at temperature 1, member k writing windows k::K."""
        # Next to the checkpoints (large, kept on the machine), not with the point JSONs.
        path = os.path.join(self.store.checkpoint_dir, "synthetic", f"{name}.npy")
        if os.path.exists(path):
            stored = np.load(path)
            if len(stored) == count:          # another pool size (another schedule) is sampled afresh
                return stored.astype(np.int32)
        d = self.config.distill
        size = teachers[0].size
        states = self.member_states(size, teachers)
        eos = int(self.manifest["eos_id"])
        out = np.zeros((count, self.config.data.seq_len + 1), np.int32)
        graphdef = self.program(size).graphdef
        for k in range(len(teachers)):
            model = train_lib.merge_model(graphdef, jax.tree.map(lambda x: x[k], states))
            rows = np.arange(k, count, len(teachers))
            for start in range(0, len(rows), d.generate_batch):
                chunk = rows[start:start + d.generate_batch]
                prompt = jnp.full((d.generate_batch, 1), eos, jnp.int32)
                tokens = lm.generate(model, prompt, self.config.data.seq_len,
                                     jax.random.fold_in(jax.random.key(key), k * 100003 + start), d.temperature)
                out[chunk, 0] = eos
                out[chunk, 1:] = np.asarray(tokens)[: len(chunk)]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path + ".tmp.npy", out.astype(np.uint16 if self.vocab_size <= 65536 else np.int32))
        os.replace(path + ".tmp.npy", path)
        return out

    def distill(self) -> None:
        d = self.config.distill
        if d.size not in self.sizes:
            return
        teachers = self.ensemble_points(d.size)
        if teachers is None or not all(self.store.has(p.id) for p in teachers):
            _log(f"distillation: no finished {d.size} ensemble to teach (run the standard, search1 and distill "
                 f"stages for {d.size} first)")
            return
        reg = self.store.get(f"ensemble_plan_{d.size}")   # the student takes the teachers' learning rate
        students, pools = student_plan(d, d.size, reg["learning_rate"], self.num_real, self.config.data.batch_size)
        if all(self.store.has(p.id) for p in students):
            return
        steps = max(recipe.steps_for(p, self.num_real, self.config.data.batch_size) for p in students)
        seconds, _ = self.estimate_seconds(d.size, steps)
        if self.deadline is not None and time.time() + seconds > self.deadline:
            self.skipped.extend(p.id for p in students)
            _log(f"skip {d.size} students ({steps} steps, ~{seconds:.0f}s): past the time budget")
            return
        for name, key in (("ensemble", 1), ("self", 2)):
            if name in pools:
                self.synthetic[name] = self.synthesize(name, teachers if name == "ensemble" else teachers[:1],
                                                       pools[name], key)
        self.run_points(students)

    def data_law(self) -> None:
        g = self.config.grid
        points = []
        for fraction in self.config.data_law.fractions:
            tokens = int(fraction * self.num_real * self.config.data.seq_len)
            for size in self.sizes:
                std = self.best(size, "standard")
                if std is None:
                    continue
                for factor in self.config.data_law.epoch_factors:
                    points.append(Point(size, "data_law", std["learning_rate"], std["weight_decay"],
                                        snap(std["epochs"] * factor, g.epochs), train_tokens=tokens))
        self.run_points(points)

    def run(self, stages: Sequence[str] = STAGES) -> dict:
        """Runs `stages` (a subset of STAGES, always in STAGES' order) and returns what finished and what
        the budget skipped. A stage whose inputs are missing from the workdir does nothing."""
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"Unknown sweep stages {unknown}; choose from {list(STAGES)}.")
        started = time.time()
        # Priority order under the budget: every deliverable gets its points before the second search round;
        # the distillation teacher's ensemble and the students come before the other sizes' ensembles (the
        # H200 run's budget cut the students when they came after every ensemble).
        steps = dict(standard=self.standard, search1=lambda: self.regularized(rounds=1),
                     distill=lambda: (self.ensembles([self.config.distill.size]), self.distill()),
                     ensembles=self.ensembles, data_law=self.data_law,
                     search2=lambda: self.regularized(rounds=self.config.regularized.max_rounds))
        for stage in STAGES:
            if stage in stages:
                steps[stage]()
        certificates = {size: self.store.get(f"regsearch_{size}") for size in self.sizes}
        return dict(stages=[s for s in STAGES if s in stages], certificates=certificates, skipped=self.skipped,
                    seconds=time.time() - started,
                    achieved_flops_per_s=self.flops_done / max(self.seconds_done, 1e-9))



# ------------------------------------------------------------------------------------------- analysis

def student_plan(d, size: str, learning_rate: float, num_real: int, batch_size: int
                 ) -> tuple[list[Point], dict[str, int]]:
    """The distillation students and the synthetic windows each pool needs.

    `d.keep_real_epochs` (the paper: steps = base x epochs / (1 - w)): every student sees the real data for
    `d.epochs` epochs and the synthetic rows come on top, so a larger synthetic share means more steps; a student
    with no real rows keeps the base step count. Otherwise (the earlier schedule) all students take the base
    steps and the synthetic share displaces real epochs. Each pool holds enough windows that no student repeats
    a window more than `d.max_synthetic_repeats` times (the paper: at most ~3), and at least `d.synthetic_windows`.
    """
    base_steps = int(round(d.epochs * num_real / batch_size))
    students, pools = [], {}
    for pool, fraction in d.students:
        synthetic_rows = round(batch_size * fraction)
        real_rows = batch_size - synthetic_rows
        if d.keep_real_epochs and real_rows:
            point = Point(size, "distill", learning_rate, d.weight_decay, float(d.epochs), synthetic=pool,
                          synthetic_fraction=fraction)
        else:
            point = Point(size, "distill", learning_rate, d.weight_decay, round(base_steps * real_rows / num_real, 3),
                          synthetic=pool, synthetic_fraction=fraction, total_steps=base_steps)
        students.append(point)
        seen = recipe.steps_for(point, num_real, batch_size) * synthetic_rows
        pools[pool] = max(pools.get(pool, int(d.synthetic_windows)), -(-seen // int(d.max_synthetic_repeats)))
    return students, pools
