"""The Durable Functions host's part, played in one process over the SDK's own replay engine:
the tests of the Functions path and the ``functions`` benchmark drive the real orchestrations
with it (:mod:`bench.durable.host`: one orchestration's history and replays;
:mod:`bench.durable.entities`: entity state; :mod:`bench.durable.driver`: orchestrations side
by side with their activities on a thread pool; :mod:`bench.durable.app`: the app's registered
functions). It lives in ``bench/`` because the benchmarks never import ``tests/``."""
