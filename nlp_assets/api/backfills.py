"""Backfills and runs through the Dagster webserver's GraphQL API (dagster-graphql's client);
the API never imports the Dagster instance.

A backfill of the daily pipeline is launched with the `launchPartitionBackfill` mutation (the
client has no method for it); its runs are started by the daemon. `GET /v1/runs/{id}` answers
for a run id and for a backfill id alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from dagster_graphql.client.query import ERROR_FRAGMENT, LAUNCH_PARTITION_BACKFILL_MUTATION

BACKFILL_QUERY = (
    ERROR_FRAGMENT
    + """
query($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions partitionNames timestamp endTimestamp
      runs(limit: 1000) { runId status }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { ...errorFragment }
  }
}
"""
)

RUN_QUERY = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } startTime endTime }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

#: Run and backfill states after which nothing changes.
FINISHED = {
    "SUCCESS",
    "FAILURE",
    "CANCELED",
    "COMPLETED",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    "FAILED",
}


class DagsterUnavailable(RuntimeError):
    """The webserver could not be reached or answered with an error (503)."""


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class Backfill:
    backfill_id: str
    partitions: list[str]
    run_ids: list[str]


class PipelineClient(DagsterGraphQLClient):
    """DagsterGraphQLClient plus the partition backfill and the run/backfill look-ups."""

    @classmethod
    def from_url(cls, url: str, timeout: int = 30) -> PipelineClient:
        parts = urlsplit(url if "//" in url else f"http://{url}")
        prefix = parts.path.removesuffix("/graphql").rstrip("/")
        return cls(
            parts.hostname or "localhost",
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=timeout,
            path_prefix=prefix,
        )

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self._execute(query, variables)
        except DagsterGraphQLClientError as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DagsterUnavailable(f"Dagster GraphQL: {first}") from None

    def launch_backfill(self, job: str, partitions: list[str], tags: dict[str, str]) -> Backfill:
        try:
            jobs = self._get_repo_locations_and_names_with_pipeline(job)
        except DagsterGraphQLClientError as error:
            raise DagsterUnavailable(f"Dagster GraphQL: {str(error).splitlines()[0]}") from None
        if len(jobs) != 1:
            raise DagsterUnavailable(
                f"job {job!r} found in {len(jobs)} code locations of the webserver (want 1)"
            )
        info = jobs[0]
        params = {
            "selector": {
                "partitionSetName": f"{job}_partition_set",
                "repositorySelector": {
                    "repositoryLocationName": info.repository_location_name,
                    "repositoryName": info.repository_name,
                },
            },
            "partitionNames": partitions,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
            "title": f"API backfill {partitions[0]}..{partitions[-1]}",
        }
        data = self.execute(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
        result = data["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise ValueError(f"{result['__typename']}: {result.get('message', '')}"[:500])
        return Backfill(result["backfillId"], partitions, result.get("launchedRunIds") or [])

    def lookup(self, identifier: str) -> dict[str, Any]:
        """A run (status, job, partition) or a backfill (status, partitions, runs)."""
        run = self.execute(RUN_QUERY, {"runId": identifier})["runOrError"]
        if run["__typename"] == "Run":
            tags = {t["key"]: t["value"] for t in run["tags"]}
            return {
                "kind": "run",
                "id": run["runId"],
                "status": run["status"],
                "job": run["jobName"],
                "partition": tags.get("dagster/partition"),
                "backfill_id": tags.get("dagster/backfill"),
                "finished": run["status"] in FINISHED,
                "succeeded": run["status"] == "SUCCESS",
            }
        backfill = self.execute(BACKFILL_QUERY, {"backfillId": identifier})
        found = backfill["partitionBackfillOrError"]
        if found["__typename"] != "PartitionBackfill":
            raise NotFound(f"no run or backfill {identifier!r} in the Dagster instance")
        runs = found.get("runs") or []
        return {
            "kind": "backfill",
            "id": found["id"],
            "status": found["status"],
            "partitions": found.get("partitionNames") or [],
            "runs": [{"run_id": r["runId"], "status": r["status"]} for r in runs],
            "finished": found["status"] in FINISHED,
            "succeeded": found["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}
            and all(r["status"] == "SUCCESS" for r in runs),
        }

    def ping(self) -> None:
        self.execute("query { version }")
