"""labmig: hands-on labs and experiments on virtual-machine migration.

Map of the package:
    _fastcopy / _purecopy   the core: bitmap scans and hashed block digests (compiled / pure twin)
    core                    picks the compiled core, or the pure twin when LABMIG_PUREPYTHON=1
    blockcopy               delta copy of disk images on top of the core
    model                   MigrationResult / TimelinePoint / Event shared by every backend
    units                   parse and format sizes, rates, durations
    errors                  LabmigError and its families
    progress                terminal progress display
    cli, commands/          the ``labmig`` command line
"""
__version__ = "0.1.0"
