"""In-memory stand-ins for libvirt hosts, for tests of the cold recovery logic.

    FakeDomain   a domain: name, active or not, create / destroy / undefine
    FakeHost     just what HostOps asks of a host: a domain by name, calls, a connection
                 whose defineXML records the XML and defines the VM named in it (or
                 ``define_as``), and close()
"""
from types import SimpleNamespace


class FakeDomain:
    def __init__(self, host, name, active):
        self.host, self._name, self.active = host, name, active

    def name(self):
        return self._name

    def isActive(self):
        return self.active

    def create(self):
        self.active = True

    def destroy(self):
        self.active = False

    def undefine(self):
        del self.host.domains[self._name]


class FakeHost:
    def __init__(self, name, define_as=None, **domains):
        self.name, self.uri, self.define_as = name, f"fake:///{name}", define_as
        self.domains = {vm: FakeDomain(self, vm, active) for vm, active in domains.items()}
        self.defined_xml = []

    def domain(self, vm):
        return self.domains.get(vm)

    def call(self, what, fn, *args, timeout=None):
        return fn(*args)

    def connect(self):
        return SimpleNamespace(defineXML=self._define)

    def _define(self, xml):
        self.defined_xml.append(xml)
        vm = self.define_as or xml.split(">")[1].split("<")[0]
        self.domains[vm] = FakeDomain(self, vm, False)
        return self.domains[vm]

    def close(self):
        pass
