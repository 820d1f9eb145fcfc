"""A real Kubernetes cluster in the lab: kubelets, containerd and kube-proxy in lab namespaces.

See cluster.py (layout, :class:`LabCluster`), node.py (one node), images.py (the images pods
run), fixtures.py (``lab_cluster`` for pytest).
"""
