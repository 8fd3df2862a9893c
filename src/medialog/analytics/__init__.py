"""Analytics read side: parameter rules (``params``, pure) and the ClickHouse queries
(``queries``) over the tables of the ClickHouse projection
(``projections/clickhouse/projection.py``)."""
