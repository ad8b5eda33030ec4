"""Kafka, in one folder: how one message becomes one row of `raw_text`.

Read in this order:

1. `topics.py`: one external asset per topic (`kafka/<topic>`), upstream of `raw_text`;
   `NLP_KAFKA_TOPICS` lists them.
2. `resource.py`: `KafkaResource` (from `KAFKA_*` variables): watermarks for the sensor,
   exact offset ranges (assign + seek, no consumer group) and dead letters for the raw stage.
3. `sensors.py`: one sensor per topic; a tick turns new offsets into bounded ranges, one
   RunRequest each (run key `topic:partition:start-end`), and retries failed ranges. Each step
   of a tick is a module-level function; a topic's settings are one `TopicSettings`.
4. `planner.py`: the sensor's plain-Python planning: the cursor, ranges, retries and
   dead-letter mode, the day stages' refresh, `TopicSettings`.
5. `messages.py`: the message contract: validation, dead letters, the landing file's lines,
   the run tags naming a range. Neither of these two talks to a broker or to Dagster.
6. `raw.py`: what the `raw_text` asset does for a Kafka run: read the range, quarantine and
   dead-letter bad messages, land the rest and parse them as one part of the day.

`dev/kafka_drain.py` (outside the package) runs a sensor and its runs in one process, as the
daemon would (tests, the streaming benchmark, a laptop without `dagster dev`).

From there the part flows through the same stages as a dropped file (`nlp_assets/stages`).
"""
