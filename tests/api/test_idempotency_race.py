"""Simultaneous retries of one request (same Idempotency-Key): the same answer whatever the
timing -- a retry that arrives while the first is still running waits for it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.test_refund_race import in_parallel

THREADS = 8
ROUNDS = 5


def test_simultaneous_retries_of_a_create_get_the_first_answer(client: TestClient) -> None:
    for n in range(ROUNDS):
        body = {"email": f"ada{n}@example.com", "name": "Ada", "external_ref": f"crm-{n}"}
        answers = in_parallel(THREADS, lambda i, body=body, n=n: client.post(  # type: ignore[misc]
            "/v1/customers", json=body, headers={"Idempotency-Key": f"create-{n}"}))
        assert [a.status_code for a in answers] == [201] * THREADS, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == THREADS - 1
    assert len(client.get("/v1/customers").json()["data"]) == ROUNDS
