"""Small building blocks shared by every node role and by the client."""
