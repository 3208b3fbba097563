"""`kubehoist timeline`: a watch recording drawn as a picture of the election."""
