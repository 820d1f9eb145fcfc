r"""`monlat matrix`: the node-to-node matrix from a metrics endpoint, for a terminal or a script.

Rows are the probing node (`from`), columns the probed one (`to`). A cell shows the latest RTT in
milliseconds, coloured by its ratio to the matrix's median; loss and missing data are marked with
text, so the table reads the same without colour:

    12%    loss over the agent's window (--window, 60 s by default) of at least 1%
    LOST   the pair is probed but has no RTT and 100 % loss
    ?      the pair has series but no RTT and no loss figure yet
    ·      no series at all for the pair
    \      the diagonal (a node and itself)
"""
