//! The image pull of a `podman run` / `docker run` backend, told as the
//! start's progress: the engine's client says on its output what it pulls
//! (`Trying to pull docker.io/library/nginx:latest...`, `Unable to find
//! image 'nginx:latest' locally`), which the waiting page and `idlegate
//! status` then show instead of a silent wait.

/// Follows one backend's output for pull lines.
#[derive(Debug, Default)]
pub struct PullWatch {
    /// The image being pulled, once a line named it.
    image: Option<String>,
    /// The progress last told.
    told: Option<String>,
}

impl PullWatch {
    /// The progress `line` tells, if it is about a pull and says something
    /// new (a hundred `Copying blob` lines are one step).
    pub fn progress(&mut self, line: &str) -> Option<String> {
        let said = self.said(line)?;
        if self.told.as_ref() == Some(&said) {
            return None;
        }
        self.told = Some(said.clone());
        Some(said)
    }

    fn said(&mut self, line: &str) -> Option<String> {
        let line = line.trim();
        let named = line
            .strip_prefix("Trying to pull ")
            .map(|rest| rest.trim_end_matches('.'))
            .or_else(|| {
                line.strip_prefix("Unable to find image '")
                    .and_then(|rest| rest.strip_suffix("' locally"))
            });
        if let Some(image) = named {
            self.image = Some(image.to_owned());
            return Some(format!("pulling the image {image}"));
        }
        let image = self.image.as_deref().unwrap_or("of the container");
        if line == "Getting image source signatures"
            || line.starts_with("Copying blob ")
            || line.contains(": Pulling fs layer")
            || line.contains(": Downloading")
        {
            return Some(format!("pulling the image {image}"));
        }
        if line == "Writing manifest to image destination"
            || line.starts_with("Status: Downloaded newer image for ")
        {
            return Some(format!(
                "the image {image} is pulled; starting the container"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_and_docker_pulls_are_told() {
        let mut podman = PullWatch::default();
        let said: Vec<Option<String>> = [
            "Resolved \"nginx\" as an alias (/etc/containers/registries.conf.d/shortnames.conf)",
            "Trying to pull docker.io/library/nginx:latest...",
            "Getting image source signatures",
            "Copying blob sha256:a2abf6c4d29d43a4bf9fbb769f524d0fb36a2edab49819c1bf3e76f409f953ea",
            "Writing manifest to image destination",
            "hello from the app",
        ]
        .iter()
        .map(|l| podman.progress(l))
        .collect();
        let pulling = Some("pulling the image docker.io/library/nginx:latest".to_owned());
        assert_eq!(
            said,
            [
                None,
                pulling,
                None,
                None,
                Some(
                    "the image docker.io/library/nginx:latest is pulled; starting the container"
                        .into()
                ),
                None
            ]
        );
        let mut docker = PullWatch::default();
        assert_eq!(
            docker
                .progress("Unable to find image 'redis:7' locally")
                .as_deref(),
            Some("pulling the image redis:7")
        );
        assert_eq!(docker.progress("a2abf6c4d29d: Pulling fs layer"), None);
        assert_eq!(
            docker
                .progress("Status: Downloaded newer image for redis:7")
                .as_deref(),
            Some("the image redis:7 is pulled; starting the container")
        );
        // An archive has no name line: the pull is told all the same.
        let mut archive = PullWatch::default();
        assert_eq!(
            archive.progress("Copying blob sha256:0123").as_deref(),
            Some("pulling the image of the container")
        );
    }
}
