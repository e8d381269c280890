"""MLflow: one MLflow run per peftlab run, nested under one parent run per study.

The store is ``$MLFLOW_TRACKING_URI`` when set, else a local SQLite file: ``mlflow.db`` in
the study directory (``runs/<study>/``), or in the run directory for a run outside a study;
artifacts go to ``mlartifacts/`` beside it. Look at it with ``mlflow ui --backend-store-uri
sqlite:///runs/<study>/mlflow.db`` (the UI needs the full mlflow package).

Runs carry the tags study, variant, seed, run_id and method; the parent has role=study.
A resumed peftlab run finds its MLflow run by its run_id tag and continues it; a run that
starts again from step 0 tags the earlier attempt's run_id "<id> (superseded)". Several
workers of one study share the store: creating the experiment and the parent run happens
under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

from peftlab.training.tracking import Sink

BATCH = 1000  # MLflow's limit of metrics per log_batch call


def store_uri(info: dict) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(info['store_dir']).resolve() / 'mlflow.db'}"


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find_run(client, experiment_id: str, **tags) -> str | None:
    where = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=where, max_results=1)
    return runs[0].info.run_id if runs else None


class MLflowSink(Sink):
    def __init__(self, run_dir: Path, info: dict, params: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow.store.db.utils"):  # table creation is not news
            logging.getLogger(name).setLevel(logging.WARNING)
        store_dir = Path(info["store_dir"]).resolve()
        self.client = client = MlflowClient(tracking_uri=store_uri(info))
        with locked(store_dir / "mlflow.lock"):
            experiment = client.get_experiment_by_name(info["study"])
            experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(info["study"], artifact_location=(store_dir / "mlartifacts").as_uri())
            )
            parent = find_run(client, experiment_id, role="study")
            if parent is None:
                parent = client.create_run(
                    experiment_id, run_name=info["study"], tags={"role": "study", "study": info["study"]}
                ).info.run_id
                client.set_terminated(parent, "FINISHED")
            run_id = find_run(client, experiment_id, run_id=info["run_id"])
            if run_id is not None and not info["resuming"]:  # an earlier attempt from step 0
                client.set_tag(run_id, "run_id", f"{info['run_id']} (superseded)")
                run_id = None
            fresh = run_id is None
            if fresh:
                tags = {k: str(info[k]) for k in ("study", "variant", "seed", "run_id", "method")}
                run_id = client.create_run(
                    experiment_id,
                    run_name=f"{info['variant']} seed={info['seed']}",
                    tags={**tags, "mlflow.parentRunId": parent},
                ).info.run_id
        self.run_id = run_id
        if fresh:
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                client.log_batch(run_id, params=items[i : i + 100])
            logged = {}
        else:
            client.update_run(run_id, status="RUNNING")
            keys = client.get_run(run_id).data.metrics
            logged = {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in keys}
        super().__init__(logged)

    def log(self, step: int, numbers: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numbers.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + BATCH])

    def finish(self, result, numbers, artifacts) -> None:
        from mlflow.entities import RunTag

        if result is None:
            self.client.set_terminated(self.run_id, "KILLED")
            return
        self.send(result.get("step") or 0, numbers)
        tags = {
            "status": result["status"],
            "health": (result.get("health") or {}).get("verdict"),
            "converged": (result.get("convergence") or {}).get("converged"),
        }
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED" if result["status"] == "completed" else "FAILED")


def attach_report(study_dir: Path, files: list[Path], base: Path) -> str | None:
    """Attach a study report's files (figures, report.md) to the study's parent MLflow run.

    Only for a study that tracked with MLflow (its ``mlflow.db`` is there, or
    ``$MLFLOW_TRACKING_URI`` is set); each file keeps its path below ``base`` under ``report/``.
    Returns the parent run's id, or None when the study has no MLflow parent run.
    """
    study_dir = Path(study_dir).resolve()
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (study_dir / "mlflow.db").is_file():
        return None  # before MLflow's import, which costs a report that never tracked a second
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri({"store_dir": study_dir}))
    with locked(study_dir / "mlflow.lock"):
        experiments = [e.experiment_id for e in client.search_experiments()]
        parents = client.search_runs(experiments, filter_string="tags.role = 'study'") if experiments else []
    names = {p.data.tags.get("study") for p in parents}
    if len(names) != 1:  # no study run, or a shared store holding several: attach nothing rather than guess
        return None
    parent = parents[0].info.run_id
    for path in files:
        folder = Path("report") / Path(path).resolve().relative_to(Path(base).resolve()).parent
        client.log_artifact(parent, str(path), artifact_path=folder.as_posix())
    return parent
