"""The checked-in event schemas must match the models (run `medialog schemas --write`)."""

import json

from click.testing import CliRunner

from medialog.cli import main
from medialog.envelope import EVENT_CLASSES, event_json_schemas
from medialog.resources import schemas_dir


def test_checked_in_schemas_are_up_to_date():
    result = CliRunner().invoke(main, ["schemas"])
    assert result.exit_code == 0, result.output


def test_every_event_type_has_a_schema_whose_id_is_its_dataschema():
    generated = event_json_schemas()
    assert len(generated) == len(EVENT_CLASSES)
    for rel, schema in generated.items():
        on_disk = json.loads((schemas_dir() / rel).read_text())
        assert on_disk["$id"] == schema["properties"]["dataschema"]["const"]
        assert on_disk["properties"]["data"]["required"]
