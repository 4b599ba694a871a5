"""The real Weaviate: a multi-tenant collection, two tenants, no cross-tenant reads."""

from __future__ import annotations

import uuid

import pytest
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.query import Filter
from weaviate.classes.tenants import Tenant

from ragstream.adapters.weaviate_client import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings):
    c = connect(settings.weaviate)
    yield c
    c.close()


def test_two_tenants_isolated(client, unique) -> None:
    name = f"Test_{unique}"
    coll = client.collections.create(
        name,
        multi_tenancy_config=Configure.multi_tenancy(enabled=True),
        vector_config=Configure.Vectors.self_provided(),
        properties=[
            Property(name="text", data_type=DataType.TEXT),
            Property(name="owner", data_type=DataType.TEXT),
        ],
    )
    try:
        coll.tenants.create([Tenant(name="acme"), Tenant(name="globex")])
        acme, globex = coll.with_tenant("acme"), coll.with_tenant("globex")
        acme.data.insert(
            {"text": "acme canary zebra-7731", "owner": "a"},
            vector=[1.0, 0.0, 0.0],
            uuid=uuid.uuid5(uuid.NAMESPACE_URL, "acme/1"),
        )
        globex.data.insert(
            {"text": "globex canary walrus-2210", "owner": "g"},
            vector=[0.0, 1.0, 0.0],
            uuid=uuid.uuid5(uuid.NAMESPACE_URL, "globex/1"),
        )

        assert len(acme.query.fetch_objects(limit=10).objects) == 1
        for tenant, own, other in ((acme, "zebra", "walrus"), (globex, "walrus", "zebra")):
            bm25 = tenant.query.bm25(query=f"canary {other}", limit=10).objects
            assert all(other not in o.properties["text"] for o in bm25)
            assert any(own in o.properties["text"] for o in tenant.query.bm25(query=own, limit=10).objects)
            near = tenant.query.near_vector([0.5, 0.5, 0.0], limit=10).objects
            assert len(near) == 1 and own in near[0].properties["text"]
            hybrid = tenant.query.hybrid(query=other, vector=[0.0, 0.0, 1.0], limit=10).objects
            assert all(other not in o.properties["text"] for o in hybrid)
            filtered = tenant.query.fetch_objects(
                filters=Filter.by_property("text").like(f"*{other}*")
            ).objects
            assert filtered == []
        # An object id from another tenant does not resolve.
        assert acme.query.fetch_object_by_id(uuid.uuid5(uuid.NAMESPACE_URL, "globex/1")) is None
    finally:
        client.collections.delete(name)
