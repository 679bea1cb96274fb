"""The destination side of a cold migration's disk copy, reached over ssh.

    paths      ImagePolicy: which file names the helper accepts (only under its image dirs)
    protocol   length-prefixed JSON frames with an optional binary payload
    agent      the helper itself: ``python -m labmig.remote.agent --image-dir DIR ...``
    ssh        SshAgent (runs the helper through ssh, counts the bytes both ways) and
               SshDestination (the block-copy destination interface on top of it)

Nothing taken from a VM or a user is ever put into a shell string: ssh runs a fixed
command built from the host's configuration, and file names travel inside frames.
"""
